//! [`Patroni`] over HTTP to `podIP:8008`, as upstream does (no auth, the
//! REST API port of Spilo). Exercised against real members on the
//! Kubernetes stand-in only (docs/coordinator.md says where).

use async_trait::async_trait;
use pgherd_shared::patroni::{Client, Cluster};
use serde_json::Value;

use super::{MemberAddr, Patroni, PatroniError};

/// Patroni's REST API port in Spilo.
pub const PATRONI_PORT: u16 = 8008;

#[derive(Default)]
pub struct HttpPatroni;

fn client(at: &MemberAddr) -> Client {
    Client::new(format!("http://{}:{PATRONI_PORT}", at.ip))
}

fn err(at: &MemberAddr) -> impl FnOnce(pgherd_shared::patroni::Error) -> PatroniError + '_ {
    move |source| PatroniError::Api {
        pod: at.pod.clone(),
        source,
    }
}

#[async_trait]
impl Patroni for HttpPatroni {
    async fn cluster(&self, at: &MemberAddr) -> Result<Cluster, PatroniError> {
        client(at).cluster().await.map_err(err(at))
    }

    async fn config(&self, at: &MemberAddr) -> Result<Value, PatroniError> {
        client(at).config().await.map_err(err(at))
    }

    async fn patch_config(&self, at: &MemberAddr, patch: &Value) -> Result<(), PatroniError> {
        client(at).patch_config(patch).await.map_err(err(at))
    }

    async fn restart_pending(&self, at: &MemberAddr) -> Result<(), PatroniError> {
        client(at).restart_pending().await.map_err(err(at))
    }

    async fn switchover(
        &self,
        at: &MemberAddr,
        leader: &str,
        candidate: &str,
    ) -> Result<(), PatroniError> {
        client(at)
            .switchover(leader, Some(candidate))
            .await
            .map_err(err(at))
    }
}
