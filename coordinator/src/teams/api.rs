//! The Teams API: `GET {teams_api_url}/teams/{team}` with a bearer token, the members in `member`
//! (postgres-operator `pkg/util/teams/teams.go`). Behind a trait so tests serve their own.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum TeamsError {
    #[error("Teams API {url}: {message}")]
    Request { url: String, message: String },
    #[error("Teams API {url}: status {status}{}", .message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        url: String,
        status: u16,
        message: Option<String>,
    },
}

#[async_trait]
pub trait TeamsApi: Send + Sync {
    /// The members of `team` from the API at `url` (`teams_api_url`, which may change at run time).
    async fn members(&self, url: &str, team: &str, token: &str) -> Result<Vec<String>, TeamsError>;
}

#[derive(Deserialize)]
struct Team {
    #[serde(default)]
    member: Vec<String>,
}

pub struct HttpTeamsApi {
    client: reqwest::Client,
}

impl Default for HttpTeamsApi {
    fn default() -> Self {
        HttpTeamsApi {
            // Upstream set none and hung with the API; a sync must not.
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("a client without custom TLS builds"),
        }
    }
}

#[async_trait]
impl TeamsApi for HttpTeamsApi {
    async fn members(&self, url: &str, team: &str, token: &str) -> Result<Vec<String>, TeamsError> {
        let url = format!("{}/teams/{team}", url.trim_end_matches('/'));
        let request = |e: reqwest::Error| TeamsError::Request {
            url: url.clone(),
            message: e.to_string(),
        };
        let resp = self
            .client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(request)?;
        let status = resp.status();
        if !status.is_success() {
            let message = resp
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v.get("error").map(|e| e.to_string()));
            return Err(TeamsError::Status {
                url,
                status: status.as_u16(),
                message,
            });
        }
        Ok(resp.json::<Team>().await.map_err(request)?.member)
    }
}

/// The last good answer per team, used while the API fails (upstream dropped the human users then).
#[derive(Default)]
pub struct LastGood(Mutex<BTreeMap<String, Vec<String>>>);

impl LastGood {
    /// `fresh` when it is an answer, else what was last known (with the error, to report).
    pub fn resolve(
        &self,
        team: &str,
        fresh: Result<Vec<String>, TeamsError>,
    ) -> (Option<Vec<String>>, Option<TeamsError>) {
        let mut known = self.0.lock().expect("teams cache");
        match fresh {
            Ok(members) => {
                known.insert(team.to_string(), members.clone());
                (Some(members), None)
            }
            Err(e) => (known.get(team).cloned(), Some(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_good_answer_outlives_an_outage() {
        let cache = LastGood::default();
        let down = || TeamsError::Request {
            url: "u".into(),
            message: "refused".into(),
        };
        assert!(cache.resolve("acid", Err(down())).0.is_none());
        assert_eq!(
            cache.resolve("acid", Ok(vec!["a".into()])).0,
            Some(vec!["a".to_string()])
        );
        let (members, error) = cache.resolve("acid", Err(down()));
        assert_eq!(members, Some(vec!["a".to_string()]));
        assert!(error.unwrap().to_string().contains("refused"));
    }
}
