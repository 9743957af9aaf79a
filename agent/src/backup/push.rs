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
use super::store::{self, ObjectStore};
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
    store: &impl ObjectStore,
    local: &Local,
    member: &str,
    allow_replica: bool,
) -> Result<Manifest, Error> {
    let facts = facts(local, allow_replica).await?;
    let started_at = Utc::now();
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
    let finished = async move {
        let status = child.wait().await.map_err(Error::Spawn)?;
        Ok(Finished {
            success: status.success(),
            status: status.to_string(),
            stderr: stderr_task.await.unwrap_or_default(),
        })
    };
    let taken = Taken {
        facts: &facts,
        started_at,
        member,
    };
    commit(store, taken, stdout, finished).await
}

/// How pg_basebackup ended, once its output has been uploaded.
struct Finished {
    success: bool,
    status: String,
    stderr: String,
}

/// What the manifest records besides the upload itself.
struct Taken<'a> {
    facts: &'a ServerFacts,
    started_at: chrono::DateTime<Utc>,
    member: &'a str,
}

/// Uploads the tar stream, then writes the manifest, the commit point, only once the data object is
/// complete and pg_basebackup reported success: a failure anywhere before leaves no backup that
/// [`catalog::list`] would return. Kept apart from the process handling so this ordering is tested
/// without a server.
async fn commit(
    store: &impl ObjectStore,
    taken: Taken<'_>,
    tar: impl AsyncRead + Unpin + Send,
    finished: impl std::future::Future<Output = Result<Finished, Error>>,
) -> Result<Manifest, Error> {
    let Taken {
        facts,
        started_at,
        member,
    } = taken;
    let name = backup_name(started_at);
    let codec = store.settings().codec;
    let dir = format!("{}{name}", store.settings().backups_prefix());
    let data_name = format!("data.tar.{}", codec.name());
    let data_key = format!("{dir}/{data_name}");

    let (hashing, digest) = hashing(tar);
    let meta = [("codec".to_string(), codec.name().to_string())]
        .into_iter()
        .collect();
    let upload = store
        .put_stream(&data_key, codec.encoder(BufReader::new(hashing)), &meta)
        .await;
    let Finished {
        success,
        status,
        stderr,
    } = finished.await?;
    if !success {
        // The data object may be complete but truncated: delete it (best effort); without a manifest it
        // is never listed either way.
        let _ = store.delete(std::slice::from_ref(&data_key)).await;
        return Err(Error::Basebackup {
            status,
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
        system_identifier: facts.system_identifier.clone(),
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

    use crate::backup::memory::{MemStore, Op};

    const STDERR: &str = "pg_basebackup: write-ahead log start point: 0/2000028 on timeline 1\n\
                          pg_basebackup: write-ahead log end point: 0/2000100\n";

    fn facts() -> ServerFacts {
        ServerFacts {
            server_version_num: 150018,
            system_identifier: "7311111111111111111".into(),
            wal_segment_size: 16 << 20,
            next_xid: 750,
        }
    }

    /// One backup through `commit`, with pg_basebackup ending as `ended` says.
    async fn take(
        store: &MemStore,
        at: &str,
        tar: &[u8],
        ended: (bool, &str),
    ) -> Result<Manifest, Error> {
        let facts = facts();
        let taken = Taken {
            facts: &facts,
            started_at: at.parse().unwrap(),
            member: "demo-0",
        };
        let finished = async {
            Ok(Finished {
                success: ended.0,
                status: if ended.0 {
                    "exit status: 0"
                } else {
                    "exit status: 1"
                }
                .into(),
                stderr: ended.1.into(),
            })
        };
        commit(store, taken, tar, finished).await
    }

    fn manifests(store: &MemStore) -> Vec<String> {
        store
            .keys()
            .into_iter()
            .filter(|k| k.ends_with(MANIFEST))
            .collect()
    }

    #[tokio::test]
    async fn the_manifest_is_written_last_and_describes_the_data() {
        let store = MemStore::new();
        let tar = vec![5u8; 300_000];
        let m = take(&store, "2026-11-21T06:00:00Z", &tar, (true, STDERR))
            .await
            .unwrap();
        let dir = format!("{}{}", store.settings().backups_prefix(), m.name);
        assert_eq!(store.calls(Op::PutStream), [format!("{dir}/data.tar.zstd")]);
        assert_eq!(store.calls(Op::Put), [format!("{dir}/{MANIFEST}")]);
        assert_eq!((m.size_bytes, m.timeline), (300_000, 1));
        assert_eq!(m.sha256, crate::backup::wal::sha256_hex(&tar));
        assert_eq!(m.start_wal, "000000010000000000000002");
        assert_eq!((m.pg_version.as_str(), m.member.as_str()), ("15", "demo-0"));
        assert_eq!(catalog::list(&store).await.unwrap(), [m]);
    }

    #[tokio::test]
    async fn no_failure_before_the_manifest_leaves_a_listed_backup() {
        let store = MemStore::new();
        store.fail_next(Op::PutStream, 1);
        let upload = take(&store, "2026-11-21T06:00:00Z", b"tar", (true, STDERR)).await;
        assert!(matches!(upload, Err(Error::Store(_))), "{upload:?}");
        assert!(store.keys().is_empty(), "an aborted upload stores nothing");

        let failed = take(&store, "2026-11-21T07:00:00Z", b"tar", (false, "FATAL: no")).await;
        assert!(
            matches!(failed, Err(Error::Basebackup { .. })),
            "{failed:?}"
        );
        assert!(
            store.keys().is_empty(),
            "the data of a failed pg_basebackup is deleted"
        );

        let garbled = take(&store, "2026-11-21T08:00:00Z", b"tar", (true, "no LSNs")).await;
        assert!(
            matches!(garbled, Err(Error::Output("start point", _))),
            "{garbled:?}"
        );

        store.fail_matching(Op::Put, &store.settings().backups_prefix());
        let commit = take(&store, "2026-11-21T09:00:00Z", b"tar", (true, STDERR)).await;
        assert!(matches!(commit, Err(Error::Store(_))), "{commit:?}");
        store.clear_faults();

        assert!(manifests(&store).is_empty(), "{:?}", store.keys());
        assert!(
            !store.keys().is_empty(),
            "data objects without a manifest remain"
        );
        assert!(catalog::list(&store).await.unwrap().is_empty());

        let done = take(&store, "2026-11-21T10:00:00Z", b"tar", (true, STDERR))
            .await
            .unwrap();
        let listed = catalog::list(&store).await.unwrap();
        assert_eq!(listed, [done], "only the complete backup is listed");
    }
}
