//! Rolling updates and Patroni configuration sync.
//!
//! The decisions are pure functions over what the pods and Patroni report
//! (`template`, `patroni_config`, `restart`, `plan`, `window`); the
//! reconciler (`crate::reconcile::rolling`) gathers their inputs and carries
//! out one step per pass. [`Patroni`] is the seam to Patroni's REST API, with
//! [`http::HttpPatroni`] for real members and `crate::fake_patroni` for tests.

pub mod http;
pub mod patroni_config;
pub mod plan;
pub mod restart;
pub mod template;
pub mod window;

use async_trait::async_trait;
use pgherd_shared::patroni::Cluster;
use serde_json::Value;

/// The member to talk to: its pod's name and IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAddr {
    pub pod: String,
    pub ip: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PatroniError {
    #[error("member {pod}: {source}")]
    Api {
        pod: String,
        source: pgherd_shared::patroni::Error,
    },
    /// Only the in-memory twin says this.
    #[error("member {pod}: {message}")]
    Refused { pod: String, message: String },
}

/// The calls the coordinator makes to Patroni, and no others.
#[async_trait]
pub trait Patroni: Send + Sync {
    async fn cluster(&self, at: &MemberAddr) -> Result<Cluster, PatroniError>;
    async fn config(&self, at: &MemberAddr) -> Result<Value, PatroniError>;
    async fn patch_config(&self, at: &MemberAddr, patch: &Value) -> Result<(), PatroniError>;
    /// `POST /restart` with `restart_pending` on the member at `at`.
    async fn restart_pending(&self, at: &MemberAddr) -> Result<(), PatroniError>;
    async fn switchover(
        &self,
        at: &MemberAddr,
        leader: &str,
        candidate: &str,
    ) -> Result<(), PatroniError>;
}
