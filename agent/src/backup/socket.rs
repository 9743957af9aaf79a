//! Hand-off of archive commands to the running agent over a Unix socket.
//!
//! Postgres starts one `archive_command` per WAL segment. Building an S3 client (TLS, credentials,
//! endpoint discovery) for every 16 MiB segment costs more than the upload itself under load. When the agent
//! runs, the per-segment process instead asks it to do the work: one long-lived client, and while one segment
//! uploads, the next segments already marked `.ready` upload in parallel, so a backlog drains at the speed
//! of the network rather than one round trip at a time. Hashing and (de)compression run on blocking threads
//! (see [`wal`]), not on `run`'s single event-loop thread, which stays free for PID 1's signals and reaping;
//! so look-ahead uploads also compress in parallel. Without the agent (or if it does not answer), the
//! command uploads directly; the result is the same objects.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, Semaphore};

use super::store::{ObjectStore, Store};
use super::wal;

/// Environment variable through which `run` tells Postgres's children where the socket is.
pub const SOCKET_VAR: &str = "PGHERD_SOCKET";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    WalPush {
        envdir: PathBuf,
        path: PathBuf,
    },
    WalFetch {
        envdir: PathBuf,
        name: String,
        dest: PathBuf,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Response {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
    /// For fetches: whether the archive had the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<bool>,
}

impl Response {
    pub fn into_result(self) -> anyhow::Result<()> {
        if self.ok {
            Ok(())
        } else {
            Err(anyhow::anyhow!(self
                .error
                .unwrap_or_else(|| "the agent reported a failure".into())))
        }
    }
}

/// Sends a request to the agent. `None` when no agent answers (not running, socket missing, timeout): the
/// caller then does the work itself.
pub async fn request(req: &Request) -> Option<Response> {
    let path = std::env::var_os(SOCKET_VAR)?;
    let exchange = async {
        let stream = UnixStream::connect(&path).await.ok()?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_string(req).ok()?;
        line.push('\n');
        write.write_all(line.as_bytes()).await.ok()?;
        let mut answer = String::new();
        BufReader::new(read).read_line(&mut answer).await.ok()?;
        serde_json::from_str(&answer).ok()
    };
    tokio::time::timeout(Duration::from_secs(330), exchange)
        .await
        .ok()
        .flatten()
}

/// Segments uploaded ahead of Postgres asking, by envdir: answering a later request is then instant.
type Done = Arc<Mutex<BTreeSet<PathBuf>>>;

/// How the server gets the store an envdir names: the S3 client in the agent, an in-memory bucket in tests.
type Open<S> =
    Box<dyn Fn(PathBuf) -> Pin<Box<dyn Future<Output = anyhow::Result<S>> + Send>> + Send + Sync>;

/// The agent's side. Only files inside `data_dir/pg_wal` are accepted: the socket's users are Postgres's
/// children, and the agent (often root) must not become a way to upload arbitrary files.
pub struct Server<S = Store> {
    data_dir: PathBuf,
    /// The postgres user: files the agent writes into pg_wal must be Postgres's to recycle.
    owner: Option<(u32, u32)>,
    open: Open<S>,
    stores: Mutex<BTreeMap<PathBuf, S>>,
    done: Done,
    /// Look-ahead uploads still running: a request for one of them waits for it instead of uploading again.
    inflight: Done,
    lookahead: Arc<Semaphore>,
}

/// Parallel uploads ahead of the requested segment (and parallel downloads ahead of recovery).
const LOOKAHEAD: usize = 4;

/// Segments fetched ahead of recovery, and where they wait (inside pg_wal, as WAL-E's prefetch did).
const READ_AHEAD: usize = 8;
const PREFETCH_DIR: &str = ".pgherd-prefetch";

impl Server {
    pub fn new(data_dir: PathBuf, owner: Option<(u32, u32)>) -> Arc<Self> {
        Self::with_stores(
            data_dir,
            owner,
            Box::new(|envdir| Box::pin(async move { Store::from_envdir(&envdir).await })),
        )
    }
}

impl<S: ObjectStore + Clone + 'static> Server<S> {
    fn with_stores(data_dir: PathBuf, owner: Option<(u32, u32)>, open: Open<S>) -> Arc<Self> {
        Arc::new(Self {
            data_dir,
            owner,
            open,
            stores: Mutex::new(BTreeMap::new()),
            done: Arc::new(Mutex::new(BTreeSet::new())),
            inflight: Arc::new(Mutex::new(BTreeSet::new())),
            lookahead: Arc::new(Semaphore::new(LOOKAHEAD)),
        })
    }

    /// A server that archives to and restores from `store` whatever the envdir.
    #[cfg(test)]
    pub(crate) fn in_memory(data_dir: PathBuf, store: S) -> Arc<Self> {
        let open: Open<S> = Box::new(move |_| {
            let store = store.clone();
            Box::pin(async move { Ok(store) })
        });
        Self::with_stores(data_dir, None, open)
    }

    /// Listens on `path` until the task is dropped. The socket is made accessible to `owner` only.
    pub async fn serve(
        self: Arc<Self>,
        path: PathBuf,
        owner: Option<(u32, u32)>,
    ) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
            }
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let _ = std::fs::remove_file(&path);
        // Read-ahead from an earlier run may belong to another archive (a clone's source): start empty.
        let _ = std::fs::remove_dir_all(self.data_dir.join("pg_wal").join(PREFETCH_DIR));
        let listener = UnixListener::bind(&path)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
        }
        loop {
            let (stream, _) = listener.accept().await?;
            let me = self.clone();
            tokio::spawn(async move {
                if let Err(e) = me.handle(stream).await {
                    tracing::warn!("archive socket connection failed: {e:#}");
                }
            });
        }
    }

    async fn handle(self: Arc<Self>, stream: UnixStream) -> anyhow::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        BufReader::new(read).read_line(&mut line).await?;
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(Request::WalPush { envdir, path }) => {
                match self.clone().wal_push(envdir, path).await {
                    Ok(()) => {
                        crate::metrics::backup().wal_pushed();
                        Response {
                            ok: true,
                            error: None,
                            found: None,
                        }
                    }
                    Err(e) => {
                        crate::metrics::backup().wal_push_failed();
                        Response {
                            ok: false,
                            error: Some(format!("{e:#}")),
                            found: None,
                        }
                    }
                }
            }
            Ok(Request::WalFetch { envdir, name, dest }) => {
                match self.clone().wal_fetch(envdir, name, dest).await {
                    Ok(found) => Response {
                        ok: true,
                        error: None,
                        found: Some(found),
                    },
                    Err(e) => Response {
                        ok: false,
                        error: Some(format!("{e:#}")),
                        found: None,
                    },
                }
            }
            Err(e) => Response {
                ok: false,
                error: Some(format!("bad request: {e}")),
                found: None,
            },
        };
        let mut out = serde_json::to_string(&response)?;
        out.push('\n');
        write.write_all(out.as_bytes()).await?;
        Ok(())
    }

    async fn store(&self, envdir: &Path) -> anyhow::Result<S> {
        let mut stores = self.stores.lock().await;
        if let Some(s) = stores.get(envdir) {
            return Ok(s.clone());
        }
        let s = (self.open)(envdir.to_path_buf()).await?;
        stores.insert(envdir.to_path_buf(), s.clone());
        Ok(s)
    }

    fn check_path(&self, path: &Path) -> anyhow::Result<PathBuf> {
        let wal_dir = self.data_dir.join("pg_wal").canonicalize()?;
        let real = path.canonicalize()?;
        anyhow::ensure!(
            real.starts_with(&wal_dir),
            "{} is not inside {}",
            path.display(),
            wal_dir.display()
        );
        Ok(real)
    }

    async fn wal_push(self: Arc<Self>, envdir: PathBuf, path: PathBuf) -> anyhow::Result<()> {
        let real = self.check_path(&path)?;
        let store = self.store(&envdir).await?;
        // A look-ahead upload of this very file may be running: wait for it rather than upload twice.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        while self.inflight.lock().await.contains(&real) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let already = self.done.lock().await.remove(&real);
        if !already {
            tokio::time::timeout(Duration::from_secs(300), wal::push(&store, &real)).await??;
        }
        if let Some(pg_wal) = real.parent() {
            self.clone()
                .upload_ahead(store, pg_wal.to_path_buf(), real.clone())
                .await;
        }
        Ok(())
    }

    /// Restores one WAL file for restore_command: from the read-ahead cache when it is already there,
    /// otherwise from S3; then starts fetching the next segments into the cache, so recovery replays at
    /// the speed of the network instead of one request round trip per 16 MiB.
    async fn wal_fetch(
        self: Arc<Self>,
        envdir: PathBuf,
        name: String,
        dest: PathBuf,
    ) -> anyhow::Result<bool> {
        anyhow::ensure!(wal::valid_name(&name), "{name:?} is not a WAL file name");
        let parent = dest.parent().map(Path::to_path_buf).unwrap_or_default();
        let pg_wal = self.check_path(&parent)?;
        let dest = pg_wal.join(dest.file_name().unwrap_or_default());
        let store = self.store(&envdir).await?;
        let cache = pg_wal.join(PREFETCH_DIR);
        let cached = cache.join(&name);
        let found = if cached.exists() {
            std::fs::rename(&cached, &dest)?;
            true
        } else {
            tokio::time::timeout(Duration::from_secs(300), wal::fetch(&store, &name, &dest))
                .await??
        };
        if found {
            self.chown(&dest);
            if wal::is_segment(&name) {
                self.clone().read_ahead(store, name, cache).await;
            }
        }
        Ok(found)
    }

    fn chown(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner {
            let _ = std::os::unix::fs::chown(path, Some(uid), Some(gid));
        }
    }

    /// Fetches the next archived segments after `name` into `cache` (in the background, bounded), and drops
    /// cached segments recovery has already passed.
    async fn read_ahead(self: Arc<Self>, store: S, name: String, cache: PathBuf) {
        if let Ok(entries) = std::fs::read_dir(&cache) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().as_ref() < name.as_str() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let prefix = format!("{}/wal/", store.settings().root());
        let next = match store
            .list_after(&prefix, &format!("{prefix}{name}"), READ_AHEAD as i32)
            .await
        {
            Ok(keys) => keys,
            Err(e) => return tracing::debug!("WAL read-ahead listing failed: {e}"),
        };
        if std::fs::create_dir_all(&cache).is_err() {
            return;
        }
        self.chown(&cache);
        for key in next {
            let file = key[prefix.len()..].to_string();
            if !wal::is_segment(&file) || cache.join(&file).exists() {
                continue;
            }
            let Ok(permit) = self.lookahead.clone().try_acquire_owned() else {
                return;
            };
            let (store, me, target) = (store.clone(), self.clone(), cache.join(&file));
            tokio::spawn(async move {
                let _permit = permit;
                match wal::fetch(&store, &file, &target).await {
                    Ok(_) => me.chown(&target),
                    Err(e) => tracing::debug!(
                        "WAL read-ahead of {file} failed (fetched on demand instead): {e}"
                    ),
                }
            });
        }
    }

    /// Starts uploads of the oldest `.ready` segments that are not yet in flight or done. `current` (just
    /// archived; its `.ready` file is renamed only after we answer) is skipped.
    async fn upload_ahead(self: Arc<Self>, store: S, pg_wal: PathBuf, current: PathBuf) {
        let Ok(entries) = std::fs::read_dir(pg_wal.join("archive_status")) else {
            return;
        };
        let mut ready: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".ready")
                    .map(str::to_string)
            })
            .collect();
        ready.sort();
        for name in ready.into_iter().take(LOOKAHEAD * 2) {
            let file = pg_wal.join(&name);
            if file == current || self.done.lock().await.contains(&file) {
                continue;
            }
            let Ok(permit) = self.lookahead.clone().try_acquire_owned() else {
                return;
            };
            if !self.inflight.lock().await.insert(file.clone()) {
                continue;
            }
            let (store, done, inflight) = (store.clone(), self.done.clone(), self.inflight.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match wal::push(&store, &file).await {
                    Ok(_) => {
                        done.lock().await.insert(file.clone());
                    }
                    Err(e) => {
                        tracing::debug!(
                            "look-ahead upload of {name} failed (Postgres will retry): {e}"
                        )
                    }
                }
                inflight.lock().await.remove(&file);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_is_line_json() {
        let r = Request::WalPush {
            envdir: "/run/etc/wal-e.d/env".into(),
            path: "/d/pg_wal/000000010000000000000001".into(),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"op":"wal-push","envdir":"/run/etc/wal-e.d/env","path":"/d/pg_wal/000000010000000000000001"}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let bad: Response = serde_json::from_str(r#"{"ok":false,"error":"boom"}"#).unwrap();
        assert_eq!(bad.into_result().unwrap_err().to_string(), "boom");
    }

    use crate::backup::memory::{MemStore, Op};

    fn segment(n: u32) -> String {
        format!("00000001000000000000{n:04X}")
    }

    /// A data directory whose pg_wal holds segments 1 to `n`, each marked `.ready`, and a server that
    /// archives into `store`.
    fn member(n: u32, store: &MemStore) -> (tempfile::TempDir, Arc<Server<MemStore>>) {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("pg_wal/archive_status");
        std::fs::create_dir_all(&status).unwrap();
        for i in 1..=n {
            std::fs::write(dir.path().join("pg_wal").join(segment(i)), [i as u8; 512]).unwrap();
            std::fs::write(status.join(format!("{}.ready", segment(i))), "").unwrap();
        }
        let server = Server::in_memory(dir.path().to_path_buf(), store.clone());
        (dir, server)
    }

    async fn settle(server: &Server<MemStore>) {
        for _ in 0..500 {
            if server.inflight.lock().await.is_empty()
                && server.lookahead.available_permits() == LOOKAHEAD
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("look-ahead did not settle");
    }

    #[tokio::test]
    async fn look_ahead_uploads_each_segment_once() {
        let store = MemStore::new();
        // Slow uploads, so Postgres asks for segments whose look-ahead upload is still in flight.
        store.set_put_latency(Duration::from_millis(50));
        let (dir, server) = member(7, &store);
        let pg_wal = dir.path().join("pg_wal");
        for i in 1..=7 {
            let path = pg_wal.join(segment(i));
            server
                .clone()
                .wal_push("/envdir".into(), path)
                .await
                .unwrap();
            // What Postgres does once the archive command succeeded.
            let status = pg_wal.join("archive_status");
            let name = segment(i);
            std::fs::rename(
                status.join(format!("{name}.ready")),
                status.join(format!("{name}.done")),
            )
            .unwrap();
        }
        settle(&server).await;
        for i in 1..=7 {
            let key = store.settings().wal_key(&segment(i));
            let count = |op| store.calls(op).iter().filter(|k| **k == key).count();
            assert_eq!((count(Op::Head), count(Op::Put)), (1, 1), "segment {i}");
        }
        assert!(
            server.done.lock().await.is_empty(),
            "every look-ahead upload was claimed"
        );
    }

    #[tokio::test]
    async fn a_failed_look_ahead_upload_is_retried_when_postgres_asks() {
        let store = MemStore::new();
        let (dir, server) = member(3, &store);
        let pg_wal = dir.path().join("pg_wal");
        store.fail_matching(Op::Put, &store.settings().wal_key(&segment(2)));
        server
            .clone()
            .wal_push("/envdir".into(), pg_wal.join(segment(1)))
            .await
            .unwrap();
        settle(&server).await;
        assert!(server
            .clone()
            .wal_push("/envdir".into(), pg_wal.join(segment(2)))
            .await
            .is_err());
        store.clear_faults();
        server
            .clone()
            .wal_push("/envdir".into(), pg_wal.join(segment(2)))
            .await
            .unwrap();
        assert!(store
            .object(&store.settings().wal_key(&segment(2)))
            .is_some());
    }

    #[tokio::test]
    async fn read_ahead_serves_the_next_segments_from_the_cache() {
        let store = MemStore::new();
        let (dir, server) = member(0, &store);
        for i in 1..=3 {
            let key = store.settings().wal_key(&segment(i));
            let file = dir.path().join(segment(i));
            std::fs::write(&file, [i as u8; 512]).unwrap();
            crate::backup::wal::push(&store, &file).await.unwrap();
            assert!(store.object(&key).is_some());
        }
        let dest = dir.path().join("pg_wal/RECOVERYXLOG");
        for i in 1..=3 {
            let found = server
                .clone()
                .wal_fetch("/envdir".into(), segment(i), dest.clone())
                .await
                .unwrap();
            assert!(found);
            assert_eq!(std::fs::read(&dest).unwrap(), [i as u8; 512]);
            settle(&server).await;
        }
        let missing = server
            .clone()
            .wal_fetch("/envdir".into(), segment(4), dest.clone())
            .await
            .unwrap();
        assert!(!missing, "the end of the archive is not an error");
        for i in 1..=3 {
            let key = store.settings().wal_key(&segment(i));
            assert_eq!(
                store.calls(Op::Get).iter().filter(|k| **k == key).count(),
                1,
                "segment {i}"
            );
        }
    }
}
