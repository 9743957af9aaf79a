//! Readiness, liveness and startup probes: `httpGet` (plain HTTP to the pod IP, 200–399 succeeds),
//! `tcpSocket` and `exec` (`podman exec`), with the kubelet's timing (`initialDelaySeconds`,
//! `periodSeconds`, `timeoutSeconds`) and thresholds. The threshold bookkeeping is pure.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn num(p: &Value, k: &str, default: u64) -> u64 {
    p.get(k).and_then(Value::as_u64).unwrap_or(default)
}

/// One probe's counters and result for the current run of a container.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counter {
    pub successes: u64,
    pub failures: u64,
    /// `None` until a threshold is reached.
    pub result: Option<bool>,
    pub last_run: Option<Instant>,
}

impl Counter {
    /// Whether the probe is due: after the initial delay from `started`, then every period.
    pub fn due(&self, probe: &Value, started: Instant, now: Instant) -> bool {
        if now < started + Duration::from_secs(num(probe, "initialDelaySeconds", 0)) {
            return false;
        }
        let period = Duration::from_secs(num(probe, "periodSeconds", 10).max(1));
        self.last_run.is_none_or(|t| now >= t + period)
    }

    /// Counts one outcome; the result flips after `successThreshold` successes or `failureThreshold`
    /// failures in a row.
    pub fn record(&mut self, probe: &Value, ok: bool, now: Instant) {
        self.last_run = Some(now);
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= num(probe, "successThreshold", 1).max(1) {
                self.result = Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= num(probe, "failureThreshold", 3).max(1) {
                self.result = Some(false);
            }
        }
    }
}

/// A probe's port: a number, or the name of one of the container's ports.
pub fn port(c: &Value, p: &Value) -> Option<u16> {
    match p {
        Value::Number(n) => n.as_u64().map(|n| n as u16),
        Value::String(s) => s.parse().ok().or_else(|| {
            c.get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|x| x.get("name").and_then(Value::as_str) == Some(s))
                .and_then(|x| x.get("containerPort").and_then(Value::as_u64))
                .map(|n| n as u16)
        }),
        _ => None,
    }
}

/// The request line and headers of an `httpGet` probe.
pub fn http_request(h: &Value, host: &str, port: u16) -> String {
    let path = h.get("path").and_then(Value::as_str).unwrap_or("/");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.36\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for hd in h
        .get("httpHeaders")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = hd.get("name").and_then(Value::as_str).unwrap_or_default();
        let value = hd.get("value").and_then(Value::as_str).unwrap_or_default();
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    req
}

/// Whether an HTTP response's status line says 200–399.
pub fn http_ok(head: &str) -> bool {
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .is_some_and(|c| (200..400).contains(&c))
}

async fn http(h: &Value, c: &Value, pod_ip: &str) -> bool {
    let Some(port) = h.get("port").and_then(|p| port(c, p)) else {
        return false;
    };
    let host = h
        .get("host")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or(pod_ip);
    let Ok(mut s) = tokio::net::TcpStream::connect((host, port)).await else {
        return false;
    };
    // HTTPS probes (which the kubelet does not verify) are only connected to.
    if h.get("scheme").and_then(Value::as_str) == Some("HTTPS") {
        return true;
    }
    if s.write_all(http_request(h, host, port).as_bytes())
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = vec![0u8; 256];
    let mut n = 0;
    while n < buf.len() {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
        if buf[..n].contains(&b'\n') {
            break;
        }
    }
    http_ok(&String::from_utf8_lossy(&buf[..n]))
}

/// Runs a probe once; a timeout is a failure.
pub async fn run(probe: &Value, c: &Value, pod_ip: &str, container: &str) -> bool {
    let timeout = Duration::from_secs(num(probe, "timeoutSeconds", 1).max(1));
    if let Some(e) = probe.get("exec") {
        let cmd: Vec<String> = e
            .get("command")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        return super::runtime::exec(container, &cmd, timeout)
            .await
            .is_ok_and(|code| code == 0);
    }
    let check = async {
        if let Some(h) = probe.get("httpGet") {
            http(h, c, pod_ip).await
        } else if let Some(t) = probe.get("tcpSocket") {
            let host = t
                .get("host")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(pod_ip);
            match t.get("port").and_then(|p| port(c, p)) {
                Some(port) => tokio::net::TcpStream::connect((host, port)).await.is_ok(),
                None => false,
            }
        } else {
            // grpc probes are not implemented: they pass.
            true
        }
    };
    tokio::time::timeout(timeout, check).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thresholds_and_timing() {
        let p = json!({"initialDelaySeconds": 2, "periodSeconds": 5, "failureThreshold": 2, "successThreshold": 2});
        let t0 = Instant::now();
        let mut c = Counter::default();
        assert!(!c.due(&p, t0, t0 + Duration::from_secs(1)));
        assert!(c.due(&p, t0, t0 + Duration::from_secs(2)));
        c.record(&p, true, t0 + Duration::from_secs(2));
        assert_eq!(c.result, None);
        assert!(!c.due(&p, t0, t0 + Duration::from_secs(6)));
        assert!(c.due(&p, t0, t0 + Duration::from_secs(7)));
        c.record(&p, true, t0 + Duration::from_secs(7));
        assert_eq!(c.result, Some(true));
        c.record(&p, false, t0 + Duration::from_secs(12));
        assert_eq!(c.result, Some(true));
        c.record(&p, false, t0 + Duration::from_secs(17));
        assert_eq!(c.result, Some(false));
    }

    #[test]
    fn http_probe_pieces() {
        let c = json!({"ports": [{"name": "patroni", "containerPort": 8008}]});
        assert_eq!(port(&c, &json!("patroni")), Some(8008));
        assert_eq!(port(&c, &json!(5432)), Some(5432));
        assert_eq!(port(&c, &json!("nope")), None);
        let r = http_request(
            &json!({"path": "readiness", "httpHeaders": [{"name": "X-A", "value": "1"}]}),
            "10.0.0.5",
            8008,
        );
        assert!(r.starts_with("GET /readiness HTTP/1.1\r\nHost: 10.0.0.5:8008\r\n"));
        assert!(r.ends_with("X-A: 1\r\n\r\n"));
        assert!(http_ok("HTTP/1.1 200 OK\r\n"));
        assert!(http_ok("HTTP/1.0 302 Found"));
        assert!(!http_ok("HTTP/1.1 503 Service Unavailable"));
        assert!(!http_ok(""));
    }
}
