//! The in-memory twin of [`super::store::Store`], with fault injection, for unit tests of the engine's
//! decisions: what a push does when the object exists, what a failed upload leaves behind, what
//! retention deletes. It keeps S3's semantics where the engine relies on them (an upload that fails
//! stores nothing, listing is in key order, a batch delete can fail for some keys only) and records
//! every call, so tests can also assert what was *not* done.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::settings::Settings;
use super::store::{Body, Error, Listed, Metadata, ObjectStore};

/// The kinds of call, for fault injection and call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    PutStream,
    Head,
    Get,
    List,
    ListAfter,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub meta: Metadata,
    pub body: Vec<u8>,
}

#[derive(Debug)]
struct Fault {
    op: Op,
    /// Only calls on keys under this prefix; `None`: any call of the kind.
    prefix: Option<String>,
    /// Calls still to fail; `None`: every one until cleared.
    remaining: Option<usize>,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, Object>,
    faults: Vec<Fault>,
    calls: Vec<(Op, String)>,
    /// How long a PUT takes, so tests can overlap requests with uploads in flight.
    put_latency: Duration,
}

/// Clones share one bucket, like clones of the real client.
#[derive(Debug, Clone)]
pub struct MemStore {
    settings: Settings,
    state: Arc<Mutex<State>>,
}

impl MemStore {
    /// An empty bucket with the cluster prefix Spilo would generate for `spilo/demo`, PostgreSQL 15.
    pub fn new() -> Self {
        let vars = crate::testutil::map(&[("WALG_S3_PREFIX", "s3://bucket/spilo/demo/wal/15")]);
        Self {
            settings: Settings::from_vars(&vars).expect("valid test settings"),
            state: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("memory store lock")
    }

    /// The next `n` calls of kind `op` fail (the whole call, before it changes anything).
    pub fn fail_next(&self, op: Op, n: usize) {
        self.state().faults.push(Fault {
            op,
            prefix: None,
            remaining: Some(n),
        });
    }

    /// Every call of kind `op` on a key under `prefix` fails until [`Self::clear_faults`]. For a batch
    /// delete only the matching keys fail; the others are deleted, as S3's DeleteObjects reports them.
    pub fn fail_matching(&self, op: Op, prefix: &str) {
        self.state().faults.push(Fault {
            op,
            prefix: Some(prefix.into()),
            remaining: None,
        });
    }

    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    pub fn set_put_latency(&self, latency: Duration) {
        self.state().put_latency = latency;
    }

    /// Keys of the calls of kind `op` so far, in order (a delete records each key).
    pub fn calls(&self, op: Op) -> Vec<String> {
        self.state()
            .calls
            .iter()
            .filter(|(o, _)| *o == op)
            .map(|(_, k)| k.clone())
            .collect()
    }

    pub fn keys(&self) -> Vec<String> {
        self.state().objects.keys().cloned().collect()
    }

    pub fn object(&self, key: &str) -> Option<Object> {
        self.state().objects.get(key).cloned()
    }

    pub fn insert(&self, key: &str, body: Vec<u8>, meta: Metadata) {
        self.state()
            .objects
            .insert(key.into(), Object { meta, body });
    }

    /// Records the call and consumes a matching fault; `Err` when the call is to fail.
    fn enter(&self, op: Op, key: &str) -> Result<(), Error> {
        let mut st = self.state();
        st.calls.push((op, key.into()));
        let hit = st.faults.iter_mut().find(|f| {
            f.op == op
                && f.prefix.as_deref().is_none_or(|p| key.starts_with(p))
                && f.remaining != Some(0)
        });
        match hit {
            None => Ok(()),
            Some(f) => {
                if let Some(n) = &mut f.remaining {
                    *n -= 1;
                }
                Err(self.injected(op, key))
            }
        }
    }

    fn injected(&self, op: Op, key: &str) -> Error {
        Error::S3 {
            op: match op {
                Op::Put => "PutObject",
                Op::PutStream => "UploadPart",
                Op::Head => "HeadObject",
                Op::Get => "GetObject",
                Op::List | Op::ListAfter => "ListObjectsV2",
                Op::Delete => "DeleteObjects",
            },
            bucket: self.settings.bucket.clone(),
            key: key.into(),
            message: "injected fault".into(),
        }
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectStore for MemStore {
    fn settings(&self) -> &Settings {
        &self.settings
    }

    async fn put(&self, key: &str, body: Vec<u8>, meta: &Metadata) -> Result<(), Error> {
        let latency = self.state().put_latency;
        tokio::time::sleep(latency).await;
        self.enter(Op::Put, key)?;
        self.insert(key, body, meta.clone());
        Ok(())
    }

    async fn put_stream(
        &self,
        key: &str,
        mut body: impl AsyncRead + Unpin + Send,
        meta: &Metadata,
    ) -> Result<u64, Error> {
        let mut data = Vec::new();
        let read = body.read_to_end(&mut data).await;
        // Like an aborted multipart upload: a failure while reading or uploading stores nothing.
        self.enter(Op::PutStream, key)?;
        read.map_err(|source| Error::Source {
            bucket: self.settings.bucket.clone(),
            key: key.into(),
            source,
        })?;
        let stored = data.len() as u64;
        self.insert(key, data, meta.clone());
        Ok(stored)
    }

    async fn head(&self, key: &str) -> Result<Option<Metadata>, Error> {
        self.enter(Op::Head, key)?;
        Ok(self.object(key).map(|o| o.meta))
    }

    async fn get(&self, key: &str) -> Result<Option<(Metadata, Body)>, Error> {
        self.enter(Op::Get, key)?;
        Ok(self.object(key).map(|o| {
            let body: Body = Box::new(std::io::Cursor::new(o.body));
            (o.meta, body)
        }))
    }

    async fn list_after(
        &self,
        prefix: &str,
        start_after: &str,
        max: i32,
    ) -> Result<Vec<String>, Error> {
        self.enter(Op::ListAfter, prefix)?;
        Ok(self
            .keys()
            .into_iter()
            .filter(|k| k.starts_with(prefix) && k.as_str() > start_after)
            .take(max.max(0) as usize)
            .collect())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>, Error> {
        self.enter(Op::List, prefix)?;
        Ok(self
            .state()
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| Listed {
                key: k.clone(),
                size: o.body.len() as u64,
            })
            .collect())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), Error> {
        let batch = keys.first().cloned().unwrap_or_default();
        // A whole-call fault (`fail_next`) leaves every key in place.
        let whole = {
            let mut st = self.state();
            let hit = st
                .faults
                .iter_mut()
                .find(|f| f.op == Op::Delete && f.prefix.is_none() && f.remaining != Some(0));
            hit.map(|f| {
                if let Some(n) = &mut f.remaining {
                    *n -= 1;
                }
            })
            .is_some()
        };
        if whole {
            self.state().calls.push((Op::Delete, batch.clone()));
            return Err(self.injected(Op::Delete, &batch));
        }
        let mut first_failure = None;
        for key in keys {
            match self.enter(Op::Delete, key) {
                Ok(()) => {
                    self.state().objects.remove(key);
                }
                Err(e) => {
                    first_failure.get_or_insert(e);
                }
            }
        }
        first_failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn faults_fail_the_named_calls_only() {
        let s = MemStore::new();
        s.fail_next(Op::Put, 1);
        assert!(s.put("a", vec![1], &Metadata::new()).await.is_err());
        assert!(s.keys().is_empty(), "a failed PUT stores nothing");
        s.put("a", vec![1], &Metadata::new()).await.unwrap();
        s.put("b/1", vec![2], &Metadata::new()).await.unwrap();
        s.put("b/2", vec![3], &Metadata::new()).await.unwrap();

        s.fail_matching(Op::Delete, "b/1");
        let keys = ["a".to_string(), "b/1".into(), "b/2".into()];
        assert!(s.delete(&keys).await.is_err());
        assert_eq!(s.keys(), ["b/1"], "only the matching key survives");
        s.clear_faults();
        s.delete(&keys).await.unwrap();
        assert!(s.keys().is_empty());
        assert_eq!(s.calls(Op::Put), ["a", "a", "b/1", "b/2"]);
    }
}
