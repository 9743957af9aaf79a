//! Restoring a base backup into an empty data directory (clone, PITR, replica creation).
//!
//! The stream is decompressed and unpacked as it downloads; the SHA-256 recorded at backup time is checked
//! at the end, and a mismatch or a broken download removes what was unpacked, so a corrupt backup can never
//! start as a database.

use std::path::Path;

use sha2::Digest;
use tokio::io::BufReader;
use tokio_util::io::SyncIoBridge;

use super::catalog::Manifest;
use super::codec::Codec;
use super::push::hashing;
use super::store::{self, ObjectStore};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0} is not empty; refusing to restore over existing files")]
    NotEmpty(String),
    #[error("backup {0}: its data object is missing")]
    Missing(String),
    #[error("backup {name}: {problem}")]
    Corrupt { name: String, problem: String },
    #[error("restoring into {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
}

fn is_empty_dir(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut it) => Ok(it.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// Restores `manifest`'s backup into `datadir`, which must be missing or empty.
pub async fn restore(
    store: &impl ObjectStore,
    manifest: &Manifest,
    datadir: &Path,
) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: datadir.display().to_string(),
        source,
    };
    if !is_empty_dir(datadir).map_err(io)? {
        return Err(Error::NotEmpty(datadir.display().to_string()));
    }
    std::fs::create_dir_all(datadir).map_err(io)?;
    let result = unpack(store, manifest, datadir).await;
    if result.is_err() {
        // Leave nothing that looks like a data directory behind.
        if let Ok(entries) = std::fs::read_dir(datadir) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = if p.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
            }
        }
    }
    result?;
    std::fs::create_dir_all(datadir.join("pg_wal")).map_err(io)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(datadir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    Ok(())
}

async fn unpack(
    store: &impl ObjectStore,
    manifest: &Manifest,
    datadir: &Path,
) -> Result<(), Error> {
    let corrupt = |problem: String| Error::Corrupt {
        name: manifest.name.clone(),
        problem,
    };
    let key = format!(
        "{}{}/{}",
        store.settings().backups_prefix(),
        manifest.name,
        manifest.data
    );
    let codec: Codec = manifest.codec.parse().map_err(corrupt)?;
    let (_, body) = store
        .get(&key)
        .await?
        .ok_or_else(|| Error::Missing(manifest.name.clone()))?;
    let (reader, digest) = hashing(codec.decoder(BufReader::new(body)));
    let bridge = SyncIoBridge::new(reader);
    let dest = datadir.to_path_buf();
    let unpacked = tokio::task::spawn_blocking(move || {
        let mut archive = tar::Archive::new(bridge);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        archive.unpack(&dest)?;
        // Drain what follows the tar end marker so the checksum covers the whole stream.
        std::io::copy(&mut archive.into_inner(), &mut std::io::sink())?;
        Ok::<_, std::io::Error>(())
    })
    .await
    .map_err(|e| corrupt(format!("unpack task failed: {e}")))?;
    unpacked.map_err(|e| corrupt(format!("download or unpack failed: {e}")))?;
    let (hasher, size) = std::mem::take(&mut *digest.lock().expect("digest lock"));
    let sha: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if size != manifest.size_bytes || sha != manifest.sha256 {
        return Err(corrupt(format!(
            "checksum mismatch: got {size} bytes sha256 {sha}, manifest says {} bytes sha256 {}",
            manifest.size_bytes, manifest.sha256
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;
    use crate::backup::catalog::tests::m;
    use crate::backup::memory::MemStore;
    use crate::backup::store::ObjectStore;
    use crate::backup::wal::sha256_hex;

    /// A backup of a data directory holding only `PG_VERSION`, stored the way `push` stores one.
    async fn stored(store: &MemStore) -> Manifest {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, "PG_VERSION", &b"15\n"[..])
            .unwrap();
        let tar = tar.into_inner().unwrap();
        let mut compressed = Vec::new();
        Codec::Zstd
            .encoder(&tar[..])
            .read_to_end(&mut compressed)
            .await
            .unwrap();
        let mut manifest = m("base_1", "2026-11-01 00:00:00+00", 100, 1);
        manifest.data = "data.tar.zstd".into();
        manifest.size_bytes = tar.len() as u64;
        manifest.sha256 = sha256_hex(&tar);
        let key = format!(
            "{}{}/{}",
            store.settings().backups_prefix(),
            manifest.name,
            manifest.data
        );
        store.insert(&key, compressed, Default::default());
        manifest
    }

    #[tokio::test]
    async fn a_verified_backup_becomes_a_data_directory() {
        let store = MemStore::new();
        let manifest = stored(&store).await;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        restore(&store, &manifest, &data).await.unwrap();
        assert_eq!(std::fs::read(data.join("PG_VERSION")).unwrap(), b"15\n");
        assert!(data.join("pg_wal").is_dir());
        let again = restore(&store, &manifest, &data).await.unwrap_err();
        assert!(matches!(again, Error::NotEmpty(_)), "{again}");
    }

    #[tokio::test]
    async fn a_corrupt_or_missing_backup_leaves_nothing_behind() {
        let store = MemStore::new();
        let mut manifest = stored(&store).await;
        manifest.sha256 = sha256_hex(b"something else");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let corrupt = restore(&store, &manifest, &data).await.unwrap_err();
        assert!(
            corrupt.to_string().contains("checksum mismatch"),
            "{corrupt}"
        );
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);

        manifest.name = "base_2".into();
        let missing = restore(&store, &manifest, &data).await.unwrap_err();
        assert!(matches!(missing, Error::Missing(_)), "{missing}");
    }
}
