//! Archiving and fetching single WAL files (archive_command / restore_command).
//!
//! Every object carries the SHA-256 of its uncompressed content and its codec as metadata. Pushing a file
//! whose name is already archived succeeds only when the content is identical (Postgres may re-archive a
//! segment after a crash between upload and the `.done` rename); different content under the same name is
//! refused loudly, because it means two clusters or two timelines write to one prefix.

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::codec::Codec;
use super::store::{self, Metadata, ObjectStore};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0:?} is not a WAL file name (segment, .history, .backup or .partial)")]
    Name(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{name} is already archived with different content (stored sha256 {stored}, local {local}): another \
         cluster or timeline is writing to this prefix; refusing to overwrite"
    )]
    Conflict {
        name: String,
        stored: String,
        local: String,
    },
    #[error("{name}: stored object is corrupt: {problem}")]
    Corrupt { name: String, problem: String },
    #[error(transparent)]
    Store(#[from] store::Error),
    /// The runtime shut down before the blocking pool ran the work.
    #[error("{work} did not finish: {source}")]
    Interrupted {
        work: &'static str,
        source: tokio::task::JoinError,
    },
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Uploaded { size: u64, stored: u64 },
    AlreadyArchived,
}

/// Whether `name` is something Postgres archives: a 24-hex-digit segment, optionally with `.partial`,
/// a `.backup` label, or a timeline `.history` file.
pub fn valid_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|c| c.is_ascii_hexdigit());
    if let Some(tl) = name.strip_suffix(".history") {
        return hex(tl, 8);
    }
    let base = name.strip_suffix(".partial").unwrap_or(name);
    match base.split_once('.') {
        None => hex(base, 24),
        Some((seg, rest)) => {
            hex(seg, 24) && rest.len() == 15 && rest.ends_with(".backup") && hex(&rest[..8], 8)
        }
    }
}

/// Whether `name` is a complete segment (24 hex digits): what recovery asks for next in order, unlike
/// `.history`, `.partial` and `.backup` files.
pub fn is_segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|c| c.is_ascii_hexdigit())
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `work` (hashing, compressing or decompressing a whole WAL file) on the blocking pool. `run`, PID 1,
/// drives everything on one thread: its signal handling and child reaping, and the archive socket. A
/// 16 MiB segment compressed there would stall them for as long as it takes.
async fn off_runtime<T: Send + 'static>(
    work: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| match source.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(source) => Error::Interrupted { work, source },
        })
}

/// Archives the file at `path` (absolute) under its own name.
pub async fn push(store: &impl ObjectStore, path: &Path) -> Result<Pushed, Error> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if !valid_name(&name) {
        return Err(Error::Name(name));
    }
    let read_err = |source| Error::Read {
        path: path.display().to_string(),
        source,
    };
    let file = path.to_path_buf();
    let (data, local) = off_runtime("reading and hashing", move || {
        std::fs::read(&file).map(|data| {
            let local = sha256_hex(&data);
            (data, local)
        })
    })
    .await?
    .map_err(read_err)?;
    let key = store.settings().wal_key(&name);
    if let Some(meta) = store.head(&key).await? {
        let stored = meta.get("sha256").cloned().unwrap_or_default();
        return if stored == local {
            Ok(Pushed::AlreadyArchived)
        } else {
            Err(Error::Conflict {
                name,
                stored,
                local,
            })
        };
    }
    let codec = store.settings().codec;
    let size = data.len() as u64;
    let compressed = off_runtime("compression", move || codec.compress(&data))
        .await?
        .map_err(read_err)?;
    let meta: Metadata = [
        ("sha256".to_string(), local),
        ("codec".to_string(), codec.name().to_string()),
        ("size".to_string(), size.to_string()),
    ]
    .into_iter()
    .collect();
    let stored = compressed.len() as u64;
    store.put(&key, compressed, &meta).await?;
    Ok(Pushed::Uploaded { size, stored })
}

/// Restores WAL file `name` to `dest`. Returns `false` when the archive does not have it (the normal end
/// of recovery). The file appears at `dest` only complete and verified (written beside it, then renamed).
pub async fn fetch(store: &impl ObjectStore, name: &str, dest: &Path) -> Result<bool, Error> {
    let Some(data) = fetch_bytes(store, name).await? else {
        return Ok(false);
    };
    let tmp = dest.with_extension("pgherd-tmp");
    let write_err = |source| Error::Write {
        path: dest.display().to_string(),
        source,
    };
    let mut f = tokio::fs::File::create(&tmp).await.map_err(write_err)?;
    f.write_all(&data).await.map_err(write_err)?;
    f.sync_all().await.map_err(write_err)?;
    drop(f);
    tokio::fs::rename(&tmp, dest).await.map_err(write_err)?;
    Ok(true)
}

/// WAL file `name`'s content, decompressed and verified against its stored checksum; `None` when the
/// archive does not have it.
pub async fn fetch_bytes(store: &impl ObjectStore, name: &str) -> Result<Option<Vec<u8>>, Error> {
    if !valid_name(name) {
        return Err(Error::Name(name.into()));
    }
    let key = store.settings().wal_key(name);
    let Some((meta, mut body)) = store.get(&key).await? else {
        return Ok(None);
    };
    let corrupt = |problem: String| Error::Corrupt {
        name: name.into(),
        problem,
    };
    let codec: Codec = meta
        .get("codec")
        .map(String::as_str)
        .unwrap_or("zstd")
        .parse()
        .map_err(corrupt)?;
    let mut compressed = Vec::new();
    body.read_to_end(&mut compressed)
        .await
        .map_err(|e| corrupt(format!("download interrupted: {e}")))?;
    let (data, actual) = off_runtime("decompression", move || {
        codec.decompress(&compressed).map(|data| {
            let actual = sha256_hex(&data);
            (data, actual)
        })
    })
    .await?
    .map_err(|e| corrupt(format!("cannot decompress: {e}")))?;
    let expected = meta.get("sha256").cloned().unwrap_or_default();
    if expected != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {expected}, content {actual})"
        )));
    }
    Ok(Some(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_postgres_archives() {
        for ok in [
            "000000010000000000000001",
            "00000002.history",
            "000000010000000000000003.partial",
            "000000010000000000000002.00000028.backup",
        ] {
            assert!(valid_name(ok), "{ok}");
            assert_eq!(is_segment(ok), ok.len() == 24, "{ok}");
        }
        for bad in [
            "",
            "../etc/passwd",
            "00000001000000000000001",
            "0000000100000000000000ZZ",
            "x.history",
            "000000010000000000000002.backup",
        ] {
            assert!(!valid_name(bad) && !is_segment(bad), "{bad}");
        }
    }

    use crate::backup::memory::{MemStore, Op};

    const SEG: &str = "000000010000000000000001";

    fn wal_file(dir: &Path, content: &[u8]) -> std::path::PathBuf {
        let path = dir.join(SEG);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[tokio::test]
    async fn pushing_the_same_segment_again_succeeds_without_uploading() {
        let dir = tempfile::tempdir().unwrap();
        let path = wal_file(dir.path(), &[1; 4096]);
        let store = MemStore::new();
        let first = push(&store, &path).await.unwrap();
        assert!(
            matches!(first, Pushed::Uploaded { size: 4096, .. }),
            "{first:?}"
        );
        let stored = store.object(&store.settings().wal_key(SEG)).unwrap();
        assert_eq!(stored.meta["sha256"], sha256_hex(&[1; 4096]));

        // Postgres re-archives after a crash between the upload and its `.done` rename.
        assert_eq!(push(&store, &path).await.unwrap(), Pushed::AlreadyArchived);
        assert_eq!(store.calls(Op::Put).len(), 1, "nothing uploaded twice");
        assert_eq!(fetch_bytes(&store, SEG).await.unwrap().unwrap(), [1; 4096]);
    }

    #[tokio::test]
    async fn different_content_under_an_archived_name_is_refused_and_nothing_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemStore::new();
        push(&store, &wal_file(dir.path(), b"timeline one"))
            .await
            .unwrap();
        let before = store.object(&store.settings().wal_key(SEG)).unwrap();

        let err = push(&store, &wal_file(dir.path(), b"another cluster"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(store.object(&store.settings().wal_key(SEG)), Some(before));
        assert_eq!(store.calls(Op::Put).len(), 1);
    }

    #[tokio::test]
    async fn a_failed_upload_is_an_error_and_the_retry_uploads() {
        let dir = tempfile::tempdir().unwrap();
        let path = wal_file(dir.path(), b"segment");
        let store = MemStore::new();
        store.fail_next(Op::Put, 1);
        assert!(matches!(push(&store, &path).await, Err(Error::Store(_))));
        assert!(store.keys().is_empty());
        assert!(matches!(
            push(&store, &path).await.unwrap(),
            Pushed::Uploaded { .. }
        ));
    }

    #[tokio::test]
    async fn fetch_refuses_corrupt_objects_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemStore::new();
        push(&store, &wal_file(dir.path(), b"good")).await.unwrap();
        assert_eq!(
            fetch_bytes(&store, "000000010000000000000002")
                .await
                .unwrap(),
            None
        );
        let key = store.settings().wal_key(SEG);
        let mut object = store.object(&key).unwrap();
        object.meta.insert("sha256".into(), sha256_hex(b"other"));
        store.insert(&key, object.body, object.meta);
        let err = fetch_bytes(&store, SEG).await.unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        let dest = dir.path().join("restored");
        assert!(fetch(&store, SEG, &dest).await.is_err());
        assert!(
            !dest.exists(),
            "nothing unverified appears at the destination"
        );
    }
}
