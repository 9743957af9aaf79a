//! A minimal in-cluster Kubernetes API client: JSON requests with the pod's service account.
//!
//! pgherd-agent needs only a few requests (the `callback-role` labels and master Endpoints, the logical
//! backup job's pod list and Event), so this is reqwest with the service account's CA, not a Kubernetes
//! client library. Everything that decides something (URL, retry policy, error text) is a pure function;
//! [`InCluster::request`] is the thin shell around the HTTP call.
//!
//! The token is read again for every request (bound service account tokens are rotated by the
//! kubelet), sent as a sensitive header, and never formatted into a log line or an error.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

/// Where the kubelet mounts the service account: `token`, `ca.crt`, `namespace`.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Spilo's `callback_role.py` always talks to this name; pgherd uses it only when the kubelet did not set
/// `KUBERNETES_SERVICE_HOST` (which also works with cluster domains other than `cluster.local`).
pub const FALLBACK_HOST: &str = "kubernetes.default.svc.cluster.local";

/// Attempts per request, as Spilo's `callback_role.py` (1 + 10 retries).
pub const ATTEMPTS: u32 = 11;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the cluster CA {}: {source}", path.display())]
    ReadCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no usable PEM certificate: {source}", path.display())]
    ParseCa {
        path: PathBuf,
        source: reqwest::Error,
    },
    #[error("building the HTTP client: {0}")]
    Client(reqwest::Error),
    #[error("{name:?} is not a valid Kubernetes object name or namespace")]
    Name { name: String },
    #[error("{method} {url}: HTTP {status}: {message}{}", hint_suffix(*status))]
    Rejected {
        method: &'static str,
        url: String,
        status: u16,
        message: String,
    },
    #[error("{method} {url}: gave up after {attempts} attempts; last: {last}")]
    GaveUp {
        method: &'static str,
        url: String,
        attempts: u32,
        last: String,
    },
}

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Done,
    Retry,
    Fail,
}

/// Spilo's policy: success is 2xx; 500, 503, 504 or any answer with `Retry-After` is retried; every other
/// status is final.
pub fn next(status: u16, retry_after: bool) -> Next {
    match status {
        200..=299 => Next::Done,
        500 | 503 | 504 => Next::Retry,
        _ if retry_after => Next::Retry,
        _ => Next::Fail,
    }
}

/// Pause before retry `n` (1-based): 0.5 s doubling as Spilo, but at most 16 s, so that the whole budget
/// (about 95 s of pauses) ends long before Patroni's next loop would have given up on us.
pub fn backoff(n: u32) -> Duration {
    let ms = 500u64.saturating_mul(1u64 << (n.saturating_sub(1)).min(16));
    Duration::from_millis(ms.min(16_000))
}

/// What an operator can do about a final status.
pub fn hint(status: u16) -> Option<&'static str> {
    match status {
        401 => Some("the service account token was rejected (expired, or from another cluster)"),
        403 => Some("the pod's service account may not do this: check its Role (deploy/rbac.yaml)"),
        404 => Some("the object does not exist"),
        _ => None,
    }
}

fn hint_suffix(status: u16) -> String {
    hint(status).map(|h| format!(" ({h})")).unwrap_or_default()
}

/// `https://HOST:PORT` of the API server from the variables the kubelet sets in every container.
pub fn base_url(host: Option<&str>, port: Option<&str>) -> String {
    let host = host.filter(|h| !h.is_empty()).unwrap_or(FALLBACK_HOST);
    let port = port.filter(|p| !p.is_empty()).unwrap_or("443");
    if host.contains(':') && !host.starts_with('[') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    }
}

/// Whether `name` can go into a URL path as a namespace or object name (DNS-1123 subdomain characters;
/// the API server checks the rest).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
}

/// `/api/v1/namespaces/NS/PLURAL/NAME` of a core/v1 object.
pub fn core_path(namespace: &str, plural: &str, name: &str) -> Result<String, Error> {
    for n in [namespace, name] {
        if !valid_name(n) {
            return Err(Error::Name { name: n.into() });
        }
    }
    Ok(format!("/api/v1/namespaces/{namespace}/{plural}/{name}"))
}

/// The `message` of a `metav1.Status` answer, else the start of the body.
pub fn status_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| body.trim().chars().take(200).collect())
}

/// The first line of the token file; `None` when it is missing or empty.
pub fn parse_token(text: &str) -> Option<&str> {
    text.lines().next().map(str::trim).filter(|t| !t.is_empty())
}

/// The API server and the service account directory.
#[derive(Debug, Clone)]
pub struct InCluster {
    pub base_url: String,
    pub service_account: PathBuf,
}

impl InCluster {
    /// From `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` and the standard service account mount.
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Self {
        InCluster {
            base_url: base_url(
                env("KUBERNETES_SERVICE_HOST").as_deref(),
                env("KUBERNETES_SERVICE_PORT").as_deref(),
            ),
            service_account: PathBuf::from(SERVICE_ACCOUNT_DIR),
        }
    }

    /// The first line of the `namespace` file, if there is one.
    pub fn namespace_file(&self) -> Option<String> {
        std::fs::read_to_string(self.service_account.join("namespace"))
            .ok()
            .and_then(|t| parse_token(&t).map(str::to_string))
    }

    fn client(&self) -> Result<reqwest::Client, Error> {
        let path = self.service_account.join("ca.crt");
        let pem = std::fs::read(&path).map_err(|source| Error::ReadCa {
            path: path.clone(),
            source,
        })?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| Error::ParseCa {
                path: path.clone(),
                source,
            })?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
        builder.build().map_err(Error::Client)
    }

    fn token(dir: &Path) -> Result<reqwest::header::HeaderValue, String> {
        let path = dir.join("token");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "cannot read the service account token {}: {e}",
                path.display()
            )
        })?;
        let token = parse_token(&text)
            .ok_or_else(|| format!("the service account token {} is empty", path.display()))?;
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| {
                format!(
                    "the service account token {} is not a valid header value",
                    path.display()
                )
            })?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// `PATCH` with `application/merge-patch+json`, retried as [`next`] and [`backoff`] say.
    pub async fn merge_patch(&self, path: &str, body: &Value) -> Result<(), Error> {
        self.request(
            reqwest::Method::PATCH,
            path,
            Some(("application/merge-patch+json", body)),
        )
        .await
        .map(|_| ())
    }

    /// `GET` of a JSON document (a list with a label selector in `path`'s query).
    pub async fn get(&self, path: &str) -> Result<Value, Error> {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// `POST` of a new object (an Event).
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Error> {
        self.request(
            reqwest::Method::POST,
            path,
            Some(("application/json", body)),
        )
        .await
    }

    /// One request retried as [`next`] and [`backoff`] say; the answer's JSON (`Null` when it is not JSON).
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, &Value)>,
    ) -> Result<Value, Error> {
        let client = self.client()?;
        let url = format!("{}{path}", self.base_url);
        let name: &'static str = match method {
            reqwest::Method::GET => "GET",
            reqwest::Method::POST => "POST",
            reqwest::Method::PATCH => "PATCH",
            _ => "request",
        };
        let body = body.map(|(ct, b)| (ct, b.to_string()));
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                let pause = backoff(attempt - 1);
                tracing::warn!(
                    "{name} {url}: {last}; retrying in {pause:?} ({attempt}/{ATTEMPTS})"
                );
                tokio::time::sleep(pause).await;
            }
            let auth = match Self::token(&self.service_account) {
                Ok(a) => a,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let mut req = client
                .request(method.clone(), &url)
                .header(reqwest::header::AUTHORIZATION, auth)
                .header(reqwest::header::ACCEPT, "application/json");
            if let Some((content_type, text)) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, *content_type)
                    .body(text.clone());
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    // The URL is in the message already; reqwest never shows headers.
                    last = ErrorChain(&e.without_url()).to_string();
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp.headers().contains_key(reqwest::header::RETRY_AFTER);
            let text = resp.text().await.unwrap_or_default();
            match next(status, retry_after) {
                Next::Done => return Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
                Next::Retry => last = format!("HTTP {status}: {}", status_message(&text)),
                Next::Fail => {
                    return Err(Error::Rejected {
                        method: name,
                        url,
                        status,
                        message: status_message(&text),
                    })
                }
            }
        }
        Err(Error::GaveUp {
            method: name,
            url,
            attempts: ATTEMPTS,
            last,
        })
    }
}

/// An error with its sources, `a: b: c` (reqwest's own Display stops at the outermost layer).
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_from_the_kubelet_variables() {
        assert_eq!(
            base_url(Some("10.96.0.1"), Some("443")),
            "https://10.96.0.1:443"
        );
        assert_eq!(
            base_url(Some("fd00::1"), Some("6443")),
            "https://[fd00::1]:6443"
        );
        assert_eq!(
            base_url(None, None),
            "https://kubernetes.default.svc.cluster.local:443"
        );
        assert_eq!(base_url(Some(""), Some("")), base_url(None, None));
    }

    #[test]
    fn retry_policy_is_spilos() {
        assert_eq!(next(200, false), Next::Done);
        assert_eq!(next(201, true), Next::Done);
        for s in [500, 503, 504] {
            assert_eq!(next(s, false), Next::Retry);
        }
        assert_eq!(next(429, true), Next::Retry);
        assert_eq!(next(429, false), Next::Fail);
        for s in [401, 403, 404, 422, 502] {
            assert_eq!(next(s, false), Next::Fail, "{s}");
        }
        let pauses: Vec<u64> = (1..ATTEMPTS)
            .map(|n| backoff(n).as_millis() as u64)
            .collect();
        assert_eq!(
            pauses,
            [500, 1000, 2000, 4000, 8000, 16000, 16000, 16000, 16000, 16000]
        );
        assert_eq!(backoff(60), Duration::from_secs(16));
    }

    #[test]
    fn paths_refuse_what_is_not_a_name() {
        assert_eq!(
            core_path("default", "pods", "demo-0").unwrap(),
            "/api/v1/namespaces/default/pods/demo-0"
        );
        for bad in ["", "a/b", "A", "x?y", "../x", "-a", "a b"] {
            assert!(core_path("default", "pods", bad).is_err(), "{bad:?}");
            assert!(core_path(bad, "pods", "x").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn status_messages_and_tokens() {
        assert_eq!(
            status_message(r#"{"kind":"Status","message":"pods \"x\" not found","code":404}"#),
            "pods \"x\" not found"
        );
        assert_eq!(status_message(" plain\n"), "plain");
        assert_eq!(parse_token("abc\n"), Some("abc"));
        assert_eq!(parse_token("\n"), None);
        assert_eq!(parse_token(""), None);
    }

    #[test]
    fn errors_carry_a_hint_and_no_token() {
        let e = Error::Rejected {
            method: "PATCH",
            url: "https://10.96.0.1:443/api/v1/namespaces/default/pods/demo-0".into(),
            status: 401,
            message: "Unauthorized".into(),
        };
        let text = e.to_string();
        assert!(text.starts_with("PATCH https://10.96.0.1:443/"));
        assert!(text.contains("HTTP 401: Unauthorized (the service account token was rejected"));
        assert!(!text.contains("Bearer"));
    }
}
