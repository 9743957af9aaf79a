//! Reading what is stored: the listing of the base prefix and the manifests of complete backups.

use tokio::io::AsyncReadExt;

use crate::backup::store::{self, ObjectStore, Store};

use super::layout::{self, Listing, Manifest};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error("manifest s3://{bucket}/{key}: {problem}")]
    Manifest {
        bucket: String,
        key: String,
        problem: String,
    },
}

/// Lists the base prefix and sorts it ([`layout::classify`]).
pub async fn load(store: &Store, base: &str) -> Result<Listing, store::Error> {
    let listed = store.list(base).await?;
    Ok(layout::classify(listed.iter().filter_map(|o| {
        o.key.strip_prefix(base).map(|k| (k, o.size))
    })))
}

/// Every key under one backup directory (for deletion).
pub fn keys_of(listing: &Listing, base: &str, id: &str) -> Vec<String> {
    listing
        .complete_keys
        .get(id)
        .or_else(|| listing.incomplete.get(id))
        .map(|keys| keys.iter().map(|k| format!("{base}{k}")).collect())
        .unwrap_or_default()
}

pub async fn manifest(store: &Store, base: &str, id: &str) -> Result<Manifest, Error> {
    let key = format!("{base}{id}/{}", layout::MANIFEST);
    let bad = |problem: String| Error::Manifest {
        bucket: store.settings().bucket.clone(),
        key: key.clone(),
        problem,
    };
    let (_, mut body) = store.get(&key).await?.ok_or_else(|| {
        bad("disappeared while reading (deleted by a concurrent retention run?)".into())
    })?;
    let mut bytes = Vec::new();
    body.read_to_end(&mut bytes)
        .await
        .map_err(|e| bad(format!("reading: {e}")))?;
    Manifest::from_json(&bytes).map_err(bad)
}
