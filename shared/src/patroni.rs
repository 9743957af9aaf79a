//! Client for Patroni's REST API, the only interface pgherd uses to drive Patroni (Spilo's upgrade script
//! imported Patroni's private Python modules instead, which broke across Patroni releases).
//!
//! Field names follow Patroni 4; Patroni 3 differences (`master` for `primary`, no `receive_lag`) are
//! absorbed here so callers see one model.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Patroni REST API {url}: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("Patroni REST API {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
}

/// `GET /cluster`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Cluster {
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default)]
    pub pause: bool,
    #[serde(default)]
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Member {
    pub name: String,
    /// Patroni's name for the role; [`Member::role`] reads it.
    pub role: String,
    /// `running`, `streaming`, `starting`, `stopped`, `crashed`, …
    pub state: String,
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub timeline: Option<u64>,
    /// Bytes behind the leader, or the string "unknown".
    #[serde(default)]
    pub lag: Option<serde_json::Value>,
    #[serde(default)]
    pub pending_restart: Option<bool>,
    #[serde(default)]
    pub tags: serde_json::Map<String, serde_json::Value>,
}

/// The Patroni tag of a member whose agent copies DCS values of local Postgres parameters into its local
/// configuration (`pgherd-agent`'s `live_parameters`); the coordinator then changes them without new pods.
pub const FOLLOWS_DCS_TAG: &str = "pgherd_follows_dcs";

/// A member's role as Patroni names it in `/patroni`, `/cluster` and callback arguments. Patroni 4 says
/// `primary` where Patroni 3 said `master`; parsing here is the one place that knows both, so callers match
/// variants instead of strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `primary` (Patroni 4) or `master` (Patroni 3): a running primary, in `/patroni` and callbacks.
    Primary,
    /// `leader`: the leader key holder of a non-standby cluster, as `/cluster` lists it.
    Leader,
    /// `standby_leader`: the leader of a standby cluster, replicating from outside.
    StandbyLeader,
    /// `replica`: an asynchronous replica.
    Replica,
    /// `sync_standby`: a synchronous replica.
    SyncStandby,
    /// `quorum_standby`: a replica in quorum-based synchronous replication (Patroni 4).
    QuorumStandby,
    /// Anything else (`uninitialized`, `demoted`, a role of a later Patroni): leads nothing, replicates
    /// nothing we rely on.
    Other,
}

impl Role {
    pub fn of(role: &str) -> Self {
        match role {
            "primary" | "master" => Self::Primary,
            "leader" => Self::Leader,
            "standby_leader" => Self::StandbyLeader,
            "replica" => Self::Replica,
            "sync_standby" => Self::SyncStandby,
            "quorum_standby" => Self::QuorumStandby,
            _ => Self::Other,
        }
    }

    pub fn is_primary(self) -> bool {
        self == Self::Primary
    }

    /// Holds the leader key: a primary, or a standby cluster's leader.
    pub fn is_leader(self) -> bool {
        matches!(self, Self::Primary | Self::Leader | Self::StandbyLeader)
    }

    /// Replicates from this cluster's leader.
    pub fn is_replica(self) -> bool {
        matches!(
            self,
            Self::Replica | Self::SyncStandby | Self::QuorumStandby
        )
    }

    /// A replica the primary waits for on commit, so the first one to promote loses nothing.
    pub fn is_synchronous(self) -> bool {
        matches!(self, Self::SyncStandby | Self::QuorumStandby)
    }
}

impl Member {
    pub fn role(&self) -> Role {
        Role::of(&self.role)
    }

    pub fn is_leader(&self) -> bool {
        self.role().is_leader()
    }

    /// Applies DCS values of local Postgres parameters itself ([`FOLLOWS_DCS_TAG`]).
    pub fn follows_dcs(&self) -> bool {
        self.tags
            .get(FOLLOWS_DCS_TAG)
            .and_then(serde_json::Value::as_bool)
            == Some(true)
    }

    /// Replication lag in bytes when Patroni knows it.
    pub fn lag_bytes(&self) -> Option<u64> {
        self.lag.as_ref().and_then(serde_json::Value::as_u64)
    }
}

impl Cluster {
    pub fn leader(&self) -> Option<&Member> {
        self.members.iter().find(|m| m.is_leader())
    }

    /// Members that are replicas currently streaming from the leader.
    pub fn streaming_replicas(&self) -> impl Iterator<Item = &Member> {
        self.members
            .iter()
            .filter(|m| !m.is_leader() && m.state == "streaming")
    }
}

/// `GET /patroni`: this member's own view.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Status {
    pub state: String,
    pub role: String,
    #[serde(default)]
    pub timeline: Option<u64>,
    #[serde(default)]
    pub server_version: Option<u64>,
    #[serde(default)]
    pub pending_restart: Option<bool>,
    #[serde(default)]
    pub patroni: Option<PatroniInfo>,
    /// Present (true) while the cluster is in maintenance mode, as this member has seen it.
    #[serde(default)]
    pub pause: bool,
    /// PostgreSQL's system identifier as Patroni last read it (it caches it for its lifetime).
    #[serde(default)]
    pub database_system_identifier: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct PatroniInfo {
    pub version: String,
    pub scope: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// A client for one member's REST API.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    /// `base` like `http://10.0.0.1:8008`.
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a reqwest client without TLS always builds");
        Self {
            base: base.into().trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, Error> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|source| Error::Http {
                url: url.clone(),
                source,
            })?;
        // /patroni answers 503 while Postgres is down but still carries the JSON body.
        resp.json()
            .await
            .map_err(|source| Error::Http { url, source })
    }

    pub async fn cluster(&self) -> Result<Cluster, Error> {
        self.get("/cluster").await
    }

    pub async fn status(&self) -> Result<Status, Error> {
        self.get("/patroni").await
    }

    /// `POST /switchover` to `candidate` (or any healthy member when `None`).
    pub async fn switchover(&self, leader: &str, candidate: Option<&str>) -> Result<(), Error> {
        let mut body = serde_json::json!({ "leader": leader });
        if let Some(c) = candidate {
            body["candidate"] = c.into();
        }
        self.send(
            self.http
                .post(format!("{}/switchover", self.base))
                .json(&body),
        )
        .await
    }

    /// `GET /config`: the dynamic configuration stored in the DCS (keys Patroni does not know included).
    pub async fn config(&self) -> Result<serde_json::Value, Error> {
        self.get("/config").await
    }

    /// `POST /restart`: restart Postgres, or start it when it is stopped (also in maintenance mode).
    pub async fn restart(&self) -> Result<(), Error> {
        self.send(
            self.http
                .post(format!("{}/restart", self.base))
                .json(&serde_json::json!({})),
        )
        .await
    }

    /// `POST /restart` with `restart_pending`: Patroni restarts only if a parameter change still waits for one,
    /// so a retried request never restarts twice.
    pub async fn restart_pending(&self) -> Result<(), Error> {
        self.send(
            self.http
                .post(format!("{}/restart", self.base))
                .json(&serde_json::json!({"restart_pending": true})),
        )
        .await
    }

    /// `PATCH /config` with a partial dynamic configuration (`null` removes a key).
    pub async fn patch_config(&self, patch: &serde_json::Value) -> Result<(), Error> {
        self.send(self.http.patch(format!("{}/config", self.base)).json(patch))
            .await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(), Error> {
        let req = req.build().map_err(|source| Error::Http {
            url: self.base.clone(),
            source,
        })?;
        let url = req.url().to_string();
        let resp = self.http.execute(req).await.map_err(|source| Error::Http {
            url: url.clone(),
            source,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(Error::Status {
            url,
            status: status.as_u16(),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_patroni_generations_name_the_primary() {
        for role in ["primary", "master"] {
            let r = Role::of(role);
            assert!(r.is_primary() && r.is_leader() && !r.is_replica(), "{role}");
        }
        let standby_leader = Role::of("standby_leader");
        assert!(!standby_leader.is_primary() && standby_leader.is_leader());
        assert!(Role::of("leader").is_leader() && !Role::of("leader").is_primary());
        for role in ["replica", "sync_standby", "quorum_standby"] {
            let r = Role::of(role);
            assert!(
                !r.is_primary() && !r.is_leader() && r.is_replica(),
                "{role}"
            );
        }
        for role in ["uninitialized", "demoted", ""] {
            let r = Role::of(role);
            assert_eq!(r, Role::Other, "{role}");
            assert!(!r.is_leader() && !r.is_replica(), "{role}");
        }
    }

    #[test]
    fn only_synchronous_replicas_are_synchronous() {
        assert!(Role::of("sync_standby").is_synchronous());
        assert!(Role::of("quorum_standby").is_synchronous());
        for role in ["replica", "leader", "primary", "master", "standby_leader"] {
            assert!(!Role::of(role).is_synchronous(), "{role}");
        }
    }

    #[test]
    fn parses_patroni_4_and_3_cluster_views() {
        let v4 = r#"{"members":[
            {"name":"pg-0","role":"leader","state":"running","api_url":"http://127.0.0.1:8008/patroni","host":"127.0.0.1","port":5432,"timeline":2},
            {"name":"pg-1","role":"sync_standby","state":"streaming","host":"127.0.0.1","port":5433,"timeline":2,"lag":0,"receive_lag":0},
            {"name":"pg-2","role":"replica","state":"running","lag":"unknown"}],"scope":"demo"}"#;
        let c: Cluster = serde_json::from_str(v4).unwrap();
        assert_eq!(c.leader().unwrap().name, "pg-0");
        assert_eq!(c.streaming_replicas().count(), 1);
        assert_eq!(c.members[1].lag_bytes(), Some(0));
        assert_eq!(c.members[2].lag_bytes(), None);
        let v3 = r#"{"members":[{"name":"a","role":"master","state":"running"}]}"#;
        let c: Cluster = serde_json::from_str(v3).unwrap();
        assert!(c.leader().is_some());
        assert!(!c.pause);
    }
}
